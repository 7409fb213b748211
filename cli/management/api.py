"""Requests to the Auth0 Management API: the client-credentials token, pacing, retries and errors.

The token and every request go through one httpx client (trusts ``SSL_CERT_FILE``). auth0-python's
``GetToken`` posts through ``requests`` with redirects always followed, which would re-send the client
secret to wherever a 307/308 points: no redirect is followed here, an answer 3xx stops with the reason.
Every request waits for the shared QuotaPacer, is retried on network errors and 5xx with backoff, and
waits for Auth0's x-ratelimit-reset after a 429; what keeps failing raises ServiceUnavailable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx

from cli.pacing import Pacer
from kernel.retry_after import requested_wait, reset_in_seconds

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path, not a secret
DEFAULT_RATE = 2.0  # requests/s: the Free plan's Management API limit
HTTP_TIMEOUT_SECONDS = 30.0
TOKEN_RENEW_MARGIN_SECONDS = 60.0
MIN_RATE_LIMIT_WAIT = 0.5  # after a 429 whose reset is already past (clock skew), still pause a little
CREDENTIALS_HINT = (
    "check AUTH0_CLIENT_ID and AUTH0_CLIENT_SECRET, and that the application is authorized for the "
    "Auth0 Management API of AUTH0_DOMAIN"
)
REDIRECT_HINT = (
    "not followed, as it would carry the client secret or the access token to another address; set "
    "AUTH0_DOMAIN to the tenant's own domain (e.g. tenant.eu.auth0.com)"
)

T = TypeVar("T")
Notify = Callable[[str], None]


class BackfillError(Exception):
    """A backfill or watch pass that cannot go on; the message says what happened and what to do."""


class ServiceUnavailable(BackfillError):
    """Auth0, the broker or the database could not be reached, or kept failing: try again later."""


class Auth0Unavailable(ServiceUnavailable):
    """Auth0's Management API could not be reached, kept failing, or kept rate limiting."""


class AccessDenied(BackfillError):
    """Auth0 refused the client credentials or the token's scope: a configuration problem."""


class NoCheckpoint(BackfillError):
    """No start was given and no checkpoint is saved for the tenant."""


class Transient(Exception):
    """One attempt failed in a way worth retrying (network, 5xx, a token that expired)."""


class RateLimited(Exception):
    """Auth0 answered 429; ``wait`` is the seconds its headers asked for (kernel.retry_after), if any."""

    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(message)
        self.wait = wait


# -- configuration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A machine-to-machine application of the tenant (scopes read:logs, read:log_streams, …)."""

    domain: str
    client_id: str
    client_secret: str

    @property
    def base_url(self) -> str:
        """https://<domain>, the origin every request goes to."""
        return f"https://{self.domain}"

    @property
    def audience(self) -> str:
        """The Management API's identifier, the audience of its tokens."""
        return f"{self.base_url}/api/v2/"


def normalize_domain(value: str) -> str:
    """``tenant.eu.auth0.com`` from what an operator may type: a URL, a trailing slash, capitals."""
    domain = value.strip().lower().removeprefix("https://").removeprefix("http://")
    return domain.split("/", 1)[0]


@dataclass(frozen=True)
class RequestRetries:
    """How long to keep trying a request that fails transiently or is rate limited."""

    retries: int = 3  # after the first attempt, for network errors and 5xx
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    backoff_max: float = 8.0
    max_rate_limit_wait: float = 60.0  # seconds, at most, for one x-ratelimit-reset
    max_rate_limited: int = 10  # 429s in a row on one request before giving up

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        return float(min(self.backoff_max, self.backoff * 2 ** (failures - 1)))


@dataclass
class ClientStats:
    """What the run cost on the Auth0 side."""

    requests: int = 0
    token_requests: int = 0
    rate_limit_waits: int = 0
    retries: int = 0


# -- pacing --------------------------------------------------------------------------------------------


class QuotaPacer(Pacer):
    """Spaces requests at most ``rate`` per second, and holds them while Auth0 says none remain.

    One per process, shared by every client of the tenant's Management API (logs and log streams), so
    their requests add up to at most ``rate``. Times are UNIX times (``clock``), the unit of Auth0's
    x-ratelimit-reset.
    """

    def __init__(
        self,
        rate: float,
        notify: Notify,
        max_wait: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        super().__init__(rate, clock, sleep)
        self._notify = notify
        self._max_wait = max_wait

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read x-ratelimit-remaining/reset: with none remaining, hold the next request until the reset."""
        until_reset = reset_in_seconds(headers.get("x-ratelimit-reset"), self._clock())
        if headers.get("x-ratelimit-remaining", "").strip() != "0" or until_reset is None:
            return
        wait = min(until_reset, self._max_wait)
        if wait > 0:
            self._notify(f"Auth0 says no requests remain (x-ratelimit-remaining: 0): pausing {wait:.1f} s")
            self.hold(wait)


# -- the token -----------------------------------------------------------------------------------------


class TokenSource:
    """A Management API token from the client-credentials grant, kept until shortly before it expires."""

    def __init__(
        self,
        credentials: Credentials,
        http: httpx.Client,
        stats: ClientStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = credentials
        self._http = http
        self._stats = stats
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._proven = False

    def get(self) -> str:
        """The current token, fetching one when there is none or it is about to expire."""
        if self._token is None or self._clock() >= self._expires_at:
            self._token, lifetime = self._fetch()
            self._expires_at = self._clock() + max(0.0, lifetime - TOKEN_RENEW_MARGIN_SECONDS)
            self._proven = False
        return self._token

    def accepted(self) -> None:
        """Record that Auth0 accepted the current token."""
        self._proven = True

    def renew_after_refusal(self) -> bool:
        """After a 401: drop a token that worked before (expired, revoked) and say whether to retry."""
        renew, self._proven = self._proven, False
        if renew:
            self._token = None
        return renew

    def _fetch(self) -> tuple[str, float]:
        # Hand-written rather than auth0-python's GetToken, which follows redirects with the secret.
        url = self._credentials.base_url + TOKEN_PATH
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "audience": self._credentials.audience,
        }
        self._stats.token_requests += 1
        try:
            response = self._http.post(url, data=form, follow_redirects=False)
        except httpx.TransportError as exc:
            raise Transient(f"token endpoint {url}: {describe(exc)}") from exc
        refuse_redirect(response, f"the token endpoint {url}")
        if response.status_code == 429:
            said = f"token endpoint: {auth0_message(response)}"
            raise RateLimited(said, requested_wait(response.headers, self._clock()))
        if response.status_code >= 400:
            raise _token_failure(url, response)
        return _access_token(url, response)


def _token_failure(url: str, response: httpx.Response) -> Exception:
    said = f"HTTP {response.status_code}: {auth0_message(response)}"
    if response.status_code in (401, 403):
        return AccessDenied(f"the token endpoint {url} refused ({said}): {CREDENTIALS_HINT}")
    if response.status_code >= 500:
        return Transient(f"token endpoint {url} answered {said}")
    return BackfillError(f"the token endpoint {url} answered {said}")


def _access_token(url: str, response: httpx.Response) -> tuple[str, float]:
    try:
        answer = response.json()
        return str(answer["access_token"]), float(answer.get("expires_in", 86400))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackfillError(f"the token endpoint {url} answered without an access_token") from exc


def refuse_redirect(response: httpx.Response, what: str) -> None:
    """Raise BackfillError for a 3xx answer: following it would send the credentials elsewhere."""
    if 300 <= response.status_code < 400:
        location = response.headers.get("location")
        target = response.url.join(location) if location else "(no Location header)"
        raise BackfillError(
            f"{what} answered HTTP {response.status_code} redirect to {target}: {REDIRECT_HINT}"
        )


def describe(exc: BaseException) -> str:
    """``ConnectError: [Errno 111] Connection refused``: an exception's type and text."""
    return f"{type(exc).__name__}: {exc}"


def auth0_message(response: httpx.Response) -> str:
    """``errorCode: message`` of Auth0's JSON error, or the start of whatever else it answered."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return error_body_message(body) or response.reason_phrase


def error_body_message(body: object) -> str:
    """``errorCode: message`` of an Auth0 error body (Management or Authentication API), cut to 300."""
    if not isinstance(body, dict):
        return str(body)[:300]
    code = body.get("errorCode") or body.get("error") or ""
    message = body.get("message") or body.get("error_description") or ""
    return f"{code}: {message}"[:300] if code and message else str(code or message or body)[:300]


def short_target(url: str | httpx.URL) -> str:
    """The path and query of ``url``, for messages (the origin is AUTH0_DOMAIN's)."""
    return httpx.URL(str(url)).raw_path.decode("ascii", errors="replace")


# -- the request loop ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What a request does and the scope it needs, for the message of a 403."""

    doing: str  # "to list logs"
    hint: str  # how to grant the scope


def scope_hint(scope: str) -> str:
    """How to grant the application of AUTH0_CLIENT_ID ``scope``."""
    return (
        f"grant the application of AUTH0_CLIENT_ID the {scope} scope (Dashboard > Applications > APIs > "
        "Auth0 Management API > Machine To Machine Applications)"
    )


class ManagementApi:
    """Paced, retried requests to one tenant's Management API with a token of its own.

    Subclasses add the endpoints (LogsClient; the log streams of `auth0-events stream`).
    """

    def __init__(
        self,
        credentials: Credentials,
        http: httpx.Client,
        pacer: QuotaPacer,
        notify: Notify,
        policy: RequestRetries | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.stats = ClientStats()
        self.http = http
        self.tokens = TokenSource(credentials, http, self.stats, clock)
        self._pacer = pacer
        self._notify = notify
        self._policy = policy or RequestRetries()
        self._sleep = sleep
        self._clock = clock

    def get(self, url: str, need: Need) -> httpx.Response:
        """GET ``url`` (absolute) with the token: the answer when 2xx, else the error it means."""
        return self.retrying(lambda: self._get_once(url, need), f"GET {short_target(url)}")

    def _get_once(self, url: str, need: Need) -> httpx.Response:
        token = self.tokens.get()
        self.stats.requests += 1
        try:
            response = self.http.get(
                url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False
            )
        except httpx.TransportError as exc:
            raise Transient(f"{self.credentials.domain}: {describe(exc)}") from exc
        self.check(response.status_code, response.headers, auth0_message(response), response, need)
        return response

    def check(
        self,
        status: int,
        headers: Mapping[str, str],
        said_by_auth0: str,
        response: httpx.Response | None,
        need: Need,
    ) -> None:
        """Raise what an answer means: RateLimited, Transient, AccessDenied, BackfillError; else note it."""
        if status != 429:  # a 429's own reset is waited for by _after_rate_limit
            self._pacer.observe(headers)
        if response is not None:
            refuse_redirect(response, f"{response.request.method} {short_target(response.url)}")
        elif 300 <= status < 400:
            raise BackfillError(f"the Management API answered HTTP {status} redirect: {REDIRECT_HINT}")
        if status < 400:
            self.tokens.accepted()
            return
        said = f"HTTP {status}: {said_by_auth0}"
        if status == 429:
            raise RateLimited(said, requested_wait(headers, self._clock()))
        if status >= 500:
            raise Transient(said)
        if status == 401 and self.tokens.renew_after_refusal():
            raise Transient(f"{said} (the token was accepted before; getting a new one)")
        if status == 401:
            raise AccessDenied(f"the Management API refused the access token ({said}): {CREDENTIALS_HINT}")
        if status == 403:
            raise AccessDenied(f"the Management API refused {need.doing} ({said}): {need.hint}")
        raise BackfillError(f"the Management API answered {said}")

    def retrying(self, attempt: Callable[[], T], what: str) -> T:
        """Run ``attempt`` after the pacer, again after a 429 or a transient failure, within the policy."""
        failures = limited = 0
        while True:
            self._pacer.wait()
            try:
                return attempt()
            except RateLimited as exc:
                limited += 1
                self._after_rate_limit(exc, what, limited)
            except Transient as exc:
                failures += 1
                self._after_failure(exc, what, failures)

    def _after_rate_limit(self, exc: RateLimited, what: str, limited: int) -> None:
        policy = self._policy
        if limited > policy.max_rate_limited:
            raise Auth0Unavailable(
                f"{what}: still rate limited by Auth0 after {policy.max_rate_limited} waits ({exc}); "
                "another client may be using the tenant's Management API quota: "
                "try again later or lower --rate"
            )
        wait = policy.delay(limited) if exc.wait is None else exc.wait
        wait = min(max(wait, MIN_RATE_LIMIT_WAIT), policy.max_rate_limit_wait)
        self.stats.rate_limit_waits += 1
        self._notify(f"{what}: rate limited by Auth0 ({exc}); waiting {wait:.1f} s for x-ratelimit-reset")
        self._pacer.hold(wait)

    def _after_failure(self, exc: Transient, what: str, failures: int) -> None:
        if failures > self._policy.retries:
            raise Auth0Unavailable(f"{what}: {exc} (gave up after {failures} attempts)") from exc
        delay = self._policy.delay(failures)
        self.stats.retries += 1
        self._notify(f"{what}: {exc}; retry {failures}/{self._policy.retries} in {delay:.1f} s")
        self._sleep(delay)
