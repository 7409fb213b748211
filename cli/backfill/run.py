"""Backfill missed events from the Auth0 Management API: checkpoint paging, rate limits, resumable runs.

Pages come from ``GET /api/v2/logs?from=<log_id>&take=<n>``, each next one from the ``Link: <…>;
rel="next"`` URL, until an empty page (Auth0 orders checkpoint reads by log_id). Each page goes through
the receiver's filter, routing and confirmed publishing; only then is its last log_id saved as the
tenant's checkpoint, so a run stopped at any point resumes with the first page that was not confirmed.

The token (client-credentials grant) and the pages both come through one httpx client (trusts
``SSL_CERT_FILE``): the SDK's ``logs.list`` cannot read checkpoint responses (auth0-python 6.8 raises
ParsingError on the bare JSON array a checkpoint page is), and its ``GetToken`` posts through
``requests`` with redirects always followed, which would re-send the client secret to wherever a 307/308
points. No redirect is followed: an answer 3xx stops the run with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.intake import Intake, sort_records
from app.publisher import PublishError
from cli.pacing import Pacer
from kernel.retry_after import requested_wait, reset_in_seconds
from kernel.routing import RouteTable
from kernel.storage.db import session_scope
from kernel.storage.explain import error_reason, safe_url
from kernel.storage.models import BackfillCheckpoint, Event, utcnow

LOGS_PATH = "/api/v2/logs"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a URL path, not a secret
MAX_TAKE = 100  # "retrieve up to 100 logs per request"
DEFAULT_RATE = 2.0  # requests/s: the Free plan's Management API limit
HTTP_TIMEOUT_SECONDS = 30.0
TOKEN_RENEW_MARGIN_SECONDS = 60.0
MIN_RATE_LIMIT_WAIT = 0.5  # after a 429 whose reset is already past (clock skew), still pause a little
READ_LOGS_HINT = (
    "grant the application of AUTH0_CLIENT_ID the read:logs scope (Dashboard > Applications > APIs > "
    "Auth0 Management API > Machine To Machine Applications)"
)
CREDENTIALS_HINT = (
    "check AUTH0_CLIENT_ID and AUTH0_CLIENT_SECRET, and that the application is authorized for the "
    "Auth0 Management API of AUTH0_DOMAIN"
)
REDIRECT_HINT = (
    "not followed, as it would carry the client secret or the access token to another address; set "
    "AUTH0_DOMAIN to the tenant's own domain (e.g. tenant.eu.auth0.com)"
)

T = TypeVar("T")
Log = dict[str, Any]
Notify = Callable[[str], None]
StopReason = Literal["end of logs", "--max-pages", "--until", "no logs at or after --since"]


class BackfillError(Exception):
    """A backfill that cannot go on; the message says what happened and what to do."""


class ServiceUnavailable(BackfillError):
    """Auth0, the broker or the database could not be reached, or kept failing: try again later."""


class AccessDenied(BackfillError):
    """Auth0 refused the client credentials or the token's scope: a configuration problem."""


class NoCheckpoint(BackfillError):
    """No start was given and no checkpoint is saved for the tenant."""


class _Transient(Exception):
    """One attempt failed in a way worth retrying (network, 5xx, a token that expired)."""


class _RateLimited(Exception):
    """Auth0 answered 429; ``wait`` is the seconds its headers asked for (kernel.retry_after), if any."""

    def __init__(self, message: str, wait: float | None) -> None:
        super().__init__(message)
        self.wait = wait


# -- configuration -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A machine-to-machine application allowed to read the tenant's logs (scope read:logs)."""

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

    Times are UNIX times (``clock``), the unit of Auth0's x-ratelimit-reset.
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
            raise _Transient(f"token endpoint {url}: {_describe(exc)}") from exc
        refuse_redirect(response, f"the token endpoint {url}")
        if response.status_code == 429:
            said = f"token endpoint: {_auth0_message(response)}"
            raise _RateLimited(said, requested_wait(response.headers, self._clock()))
        if response.status_code >= 400:
            raise _token_failure(url, response)
        return _access_token(url, response)


def _token_failure(url: str, response: httpx.Response) -> Exception:
    said = f"HTTP {response.status_code}: {_auth0_message(response)}"
    if response.status_code in (401, 403):
        return AccessDenied(f"the token endpoint {url} refused ({said}): {CREDENTIALS_HINT}")
    if response.status_code >= 500:
        return _Transient(f"token endpoint {url} answered {said}")
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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- the logs endpoint ---------------------------------------------------------------------------------


class LogsClient:
    """Reads the tenant's logs: by checkpoint (following Link rel="next") and one search by date.

    Every request is paced, retried on network errors and 5xx with backoff, and waits for Auth0's
    x-ratelimit-reset after a 429; what keeps failing raises ServiceUnavailable.
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
        self._http = http
        self._pacer = pacer
        self._notify = notify
        self._policy = policy or RequestRetries()
        self._sleep = sleep
        self._clock = clock
        self._tokens = TokenSource(credentials, http, self.stats, clock)

    def pages(self, after_log_id: str, take: int = MAX_TAKE) -> Iterator[list[Log]]:
        """Yield pages of logs after ``after_log_id`` in log_id order; the last one yielded is empty."""
        url = checkpoint_url(self.credentials, after_log_id, take)
        while True:
            response = self._get(url)
            logs = _log_list(response, url)
            yield logs
            if not logs:
                return
            url = self._next_url(response, logs, take)

    def first_since(self, since: datetime) -> Log | None:
        """The oldest log dated at or after ``since`` (a search, sort=date:1, per_page=1), or None."""
        params = {
            "q": f"date:[{iso_millis(since)} TO *]",
            "sort": "date:1",
            "per_page": "1",
            "page": "0",
            "include_totals": "false",
        }
        url = str(httpx.URL(self.credentials.base_url + LOGS_PATH, params=params))
        logs = _log_list(self._get(url), url)
        return logs[0] if logs else None

    def _next_url(self, response: httpx.Response, logs: list[Log], take: int) -> str:
        link = response.links.get("next", {}).get("url")
        last = last_checkpoint(logs)
        if not link and last is not None:
            # Auth0 documents a Link on every page; without one, the last log_id is the same cursor.
            return checkpoint_url(self.credentials, last.log_id, take)
        if not link:
            raise BackfillError(
                f"GET {_short(str(response.url))}: no Link rel=next and no log_id to go on from"
            )
        url = response.url.join(link)
        if (url.scheme, url.host, url.port) != (response.url.scheme, response.url.host, response.url.port):
            raise BackfillError(
                f"Auth0's Link rel=next points at another host ({url.host}); not following it"
            )
        return str(url)

    def _get(self, url: str) -> httpx.Response:
        return self._retrying(lambda: self._get_once(url), f"GET {_short(url)}")

    def _get_once(self, url: str) -> httpx.Response:
        token = self._tokens.get()
        self.stats.requests += 1
        try:
            response = self._http.get(
                url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False
            )
        except httpx.TransportError as exc:
            raise _Transient(f"{self.credentials.domain}: {_describe(exc)}") from exc
        if response.status_code != 429:  # a 429's own reset is waited for by _after_rate_limit
            self._pacer.observe(response.headers)
        self._check(response)
        self._tokens.accepted()
        return response

    def _check(self, response: httpx.Response) -> None:
        refuse_redirect(response, f"GET {_short(str(response.url))}")
        status = response.status_code
        if status < 400:
            return
        said = f"HTTP {status}: {_auth0_message(response)}"
        if status == 429:
            raise _RateLimited(said, requested_wait(response.headers, self._clock()))
        if status >= 500:
            raise _Transient(said)
        if status == 401 and self._tokens.renew_after_refusal():
            raise _Transient(f"{said} (the token was accepted before; getting a new one)")
        if status == 401:
            raise AccessDenied(f"the Management API refused the access token ({said}): {CREDENTIALS_HINT}")
        if status == 403:
            raise AccessDenied(f"the Management API refused to list logs ({said}): {READ_LOGS_HINT}")
        raise BackfillError(f"the Management API answered GET {_short(str(response.url))} with {said}")

    def _retrying(self, attempt: Callable[[], T], what: str) -> T:
        failures = limited = 0
        while True:
            self._pacer.wait()
            try:
                return attempt()
            except _RateLimited as exc:
                limited += 1
                self._after_rate_limit(exc, what, limited)
            except _Transient as exc:
                failures += 1
                self._after_failure(exc, what, failures)

    def _after_rate_limit(self, exc: _RateLimited, what: str, limited: int) -> None:
        policy = self._policy
        if limited > policy.max_rate_limited:
            raise ServiceUnavailable(
                f"{what}: still rate limited by Auth0 after {policy.max_rate_limited} waits ({exc}); "
                "another client may be using the tenant's Management API quota: "
                "try again later or lower --rate"
            )
        wait = policy.delay(limited) if exc.wait is None else exc.wait
        wait = min(max(wait, MIN_RATE_LIMIT_WAIT), policy.max_rate_limit_wait)
        self.stats.rate_limit_waits += 1
        self._notify(f"{what}: rate limited by Auth0 ({exc}); waiting {wait:.1f} s for x-ratelimit-reset")
        self._pacer.hold(wait)

    def _after_failure(self, exc: _Transient, what: str, failures: int) -> None:
        if failures > self._policy.retries:
            raise ServiceUnavailable(f"{what}: {exc} (gave up after {failures} attempts)") from exc
        delay = self._policy.delay(failures)
        self.stats.retries += 1
        self._notify(f"{what}: {exc}; retry {failures}/{self._policy.retries} in {delay:.1f} s")
        self._sleep(delay)


def checkpoint_url(credentials: Credentials, after_log_id: str, take: int) -> str:
    """The first checkpoint request: logs after ``after_log_id``, ``take`` of them (at most 100)."""
    params = {"from": after_log_id, "take": str(min(max(take, 1), MAX_TAKE))}
    return str(httpx.URL(credentials.base_url + LOGS_PATH, params=params))


def iso_millis(moment: datetime) -> str:
    """``2026-11-20T00:00:00.000Z``: the date format Auth0 writes in its logs."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _log_list(response: httpx.Response, url: str) -> list[Log]:
    try:
        body = response.json()
    except ValueError as exc:
        raise BackfillError(f"GET {_short(url)}: Auth0 answered something that is not JSON") from exc
    if isinstance(body, dict) and isinstance(body.get("logs"), list):  # search with include_totals
        body = body["logs"]
    if not isinstance(body, list):
        raise BackfillError(f"GET {_short(url)}: expected a JSON array of logs, got {type(body).__name__}")
    return body


def _auth0_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:300]
    code = body.get("errorCode") or body.get("error") or ""
    message = body.get("message") or body.get("error_description") or ""
    return f"{code}: {message}" if code and message else str(code or message or body)[:300]


def _short(url: str) -> str:
    parsed = httpx.URL(url)
    return parsed.raw_path.decode("ascii", errors="replace")


# -- checkpoints and the ledger ------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """The last log of a confirmed page: the next run reads the logs after it."""

    log_id: str
    date: datetime | None


def load_checkpoint(session: Session, domain: str) -> Checkpoint | None:
    """The checkpoint saved for ``domain``, if any."""
    row = session.get(BackfillCheckpoint, domain)
    return None if row is None else Checkpoint(row.log_id, row.log_date)


def save_checkpoint(session: Session, domain: str, checkpoint: Checkpoint, now: datetime) -> None:
    """Record ``checkpoint`` as where ``domain``'s backfill stands."""
    row = session.get(BackfillCheckpoint, domain)
    if row is None:
        session.add(
            BackfillCheckpoint(
                domain=domain, log_id=checkpoint.log_id, log_date=checkpoint.date, updated_at=now
            )
        )
    else:
        row.log_id, row.log_date, row.updated_at = checkpoint.log_id, checkpoint.date, now


def processed_log_ids(session: Session, log_ids: Collection[str]) -> set[str]:
    """Those of ``log_ids`` whose event the ledger records as processed."""
    if not log_ids:
        return set()
    rows = session.scalars(select(Event.log_id).where(Event.log_id.in_(log_ids), Event.state == "processed"))
    return set(rows)


class CheckpointStore:
    """Checkpoints and ledger look-ups for one tenant in DATABASE_URL; database failures are explained."""

    def __init__(self, database_url: str, domain: str) -> None:
        self.database_url = database_url
        self.domain = domain

    def load(self) -> Checkpoint | None:
        """The tenant's saved checkpoint, if any."""
        with (
            _database_errors("reading the checkpoint", self.database_url),
            session_scope(self.database_url, read_only=True) as session,
        ):
            return load_checkpoint(session, self.domain)

    def save(self, checkpoint: Checkpoint) -> None:
        """Save the tenant's checkpoint (committed when this returns)."""
        with (
            _database_errors("saving the checkpoint", self.database_url),
            session_scope(self.database_url) as session,
        ):
            save_checkpoint(session, self.domain, checkpoint, utcnow())

    def processed(self, log_ids: Collection[str]) -> set[str]:
        """Those of ``log_ids`` already processed by the workers."""
        with (
            _database_errors("reading the ledger", self.database_url),
            session_scope(self.database_url, read_only=True) as session,
        ):
            return processed_log_ids(session, log_ids)


@contextmanager
def _database_errors(doing: str, url: str) -> Iterator[None]:
    """Turn SQLAlchemy errors into ServiceUnavailable naming the database (without its password)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"{doing} in {safe_url(url)} failed: {error_reason(exc)} (is the database reachable and "
            "migrated? `auth0-events db upgrade`)"
        ) from exc


# -- the run -------------------------------------------------------------------------------------------


class Publisher(Protocol):
    """What publishes a page's events and returns once the broker confirmed them (EventPublisher)."""

    def publish(self, intake: Intake, request_id: str) -> None:
        """Publish and wait for the broker's confirms; raise PublishError otherwise."""


class Store(Protocol):
    """Where checkpoints are kept and the ledger is asked (CheckpointStore)."""

    def save(self, checkpoint: Checkpoint) -> None:
        """Save the tenant's checkpoint."""

    def processed(self, log_ids: Collection[str]) -> set[str]:
        """Those of ``log_ids`` already processed."""


@dataclass(frozen=True)
class Start:
    """Where a run starts: after a log_id, or at the first log dated at or after ``since``."""

    after_log_id: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class Limits:
    """When a run stops before the end of the logs."""

    max_pages: int | None = None
    until: datetime | None = None  # the first log dated at or after it is not processed


@dataclass
class Summary:
    """What a run did; logs_read = published + filtered + quarantined + already_processed + duplicates."""

    pages: int = 0
    logs_read: int = 0
    published: int = 0
    filtered: int = 0
    quarantined: int = 0
    already_processed: int = 0
    duplicates: int = 0
    checkpoint: Checkpoint | None = None
    stopped: StopReason | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started_at

    def rate(self) -> float:
        """Logs read per second so far."""
        return self.logs_read / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        checkpoint = self.checkpoint
        return {
            "pages": self.pages,
            "logs_read": self.logs_read,
            "published": self.published,
            "filtered": self.filtered,
            "quarantined": self.quarantined,
            "already_processed": self.already_processed,
            "duplicates": self.duplicates,
            "checkpoint": None if checkpoint is None else checkpoint.log_id,
            "checkpoint_date": None
            if checkpoint is None or checkpoint.date is None
            else iso_millis(checkpoint.date),
            "stopped": self.stopped,
            "seconds": round(self.elapsed, 3),
            "logs_per_second": round(self.rate(), 1),
        }


def resolve_start(from_log_id: str | None, since: datetime | None, saved: Checkpoint | None) -> Start:
    """The start the operator asked for, or the saved checkpoint; raises NoCheckpoint when there is none."""
    if from_log_id is not None and since is not None:
        raise BackfillError("--from and --since exclude each other: give one")
    if from_log_id is not None or since is not None:
        return Start(from_log_id, since)
    if saved is None:
        raise NoCheckpoint(
            "no checkpoint is saved for this tenant yet: start with --since (e.g. --since 2026-11-20T00:00Z) "
            "or --from LOG_ID"
        )
    return Start(after_log_id=saved.log_id)


def log_pages(client: LogsClient, start: Start, take: int = MAX_TAKE) -> Iterator[list[Log]]:
    """The pages of a run: for ``since``, the first log found by search, then the logs after it."""
    if start.after_log_id is not None:
        yield from client.pages(start.after_log_id, take)
        return
    assert start.since is not None
    first = client.first_since(start.since)
    if first is None or not isinstance(first.get("log_id"), str):
        return
    yield [first]
    yield from client.pages(first["log_id"], take)


def run_backfill(
    pages: Iterable[list[Log]],
    routes: RouteTable,
    publisher: Publisher,
    store: Store,
    limits: Limits | None = None,
    on_page: Callable[[Summary], None] | None = None,
    run_id: str = "backfill",
    after_log_id: str | None = None,
) -> Summary:
    """Process ``pages`` in order until an empty one (or a limit); return what was done.

    Each page is published and confirmed before its checkpoint is saved. A log repeated from the previous
    page, or ``after_log_id`` itself, counts as a duplicate (should Auth0's ``from`` ever be inclusive).
    Raises ServiceUnavailable when Auth0, the broker or the database fails, saying where the checkpoint
    stays, and AccessDenied or BackfillError when Auth0 refuses.
    """
    run = _Run(routes, publisher, store, limits or Limits(), on_page, run_id)
    run.previous = {after_log_id} if after_log_id else set()
    try:
        run.through(pages)
    except ServiceUnavailable as exc:
        raise ServiceUnavailable(f"{exc}; {resume_hint(run.summary.checkpoint)}") from exc
    except BackfillError as exc:
        if run.summary.pages == 0:
            raise
        raise type(exc)(f"{exc}; {resume_hint(run.summary.checkpoint)}") from exc
    return run.summary


@dataclass
class _Run:
    """One run's collaborators and state: the summary so far and the previous page's log_ids."""

    routes: RouteTable
    publisher: Publisher
    store: Store
    limits: Limits
    on_page: Callable[[Summary], None] | None
    run_id: str
    summary: Summary = field(default_factory=lambda: Summary(stopped="no logs at or after --since"))
    previous: set[str] = field(default_factory=set)

    def through(self, pages: Iterable[list[Log]]) -> None:
        """Process pages until an empty one or a limit."""
        for logs in pages:
            if not logs:
                self.summary.stopped = "end of logs"
                return
            kept, reached_until = before(logs, self.limits.until)
            if kept:
                self.page(kept)
            max_pages = self.limits.max_pages
            if reached_until or (max_pages is not None and self.summary.pages >= max_pages):
                self.summary.stopped = "--until" if reached_until else "--max-pages"
                return

    def page(self, logs: list[Log]) -> None:
        """Publish one page's events, confirmed, then save its checkpoint."""
        summary = self.summary
        fresh = [log for log in logs if log_id_of(log) not in self.previous]
        intake = sort_records(fresh, self.routes)
        done = self.store.processed([event.log_id for event in intake.accepted])
        intake.accepted = [event for event in intake.accepted if event.log_id not in done]
        if intake.accepted or intake.quarantined:
            try:
                self.publisher.publish(intake, f"{self.run_id}-p{summary.pages + 1}")
            except PublishError as exc:
                raise ServiceUnavailable(
                    f"the broker did not confirm page {summary.pages + 1}: {exc}"
                ) from exc
        checkpoint = last_checkpoint(logs)
        if checkpoint is not None:
            self.store.save(checkpoint)
            summary.checkpoint = checkpoint
        self._count(logs, fresh, intake, len(done))
        self.previous = {log_id for log in logs if (log_id := log_id_of(log)) is not None}
        if self.on_page is not None:
            self.on_page(summary)

    def _count(self, logs: list[Log], fresh: list[Log], intake: Intake, already_processed: int) -> None:
        summary = self.summary
        summary.pages += 1
        summary.logs_read += len(logs)
        summary.duplicates += len(logs) - len(fresh) + sum(intake.duplicates.values())
        summary.published += len(intake.accepted)
        summary.filtered += sum(intake.filtered.values())
        summary.quarantined += len(intake.quarantined)
        summary.already_processed += already_processed


def before(logs: list[Log], until: datetime | None) -> tuple[list[Log], bool]:
    """The logs before the first one dated at or after ``until``, and whether there was one."""
    if until is None:
        return logs, False
    for index, log in enumerate(logs):
        date = log_date(log)
        if date is not None and date >= until:
            return logs[:index], True
    return logs, False


def last_checkpoint(logs: list[Log]) -> Checkpoint | None:
    """The checkpoint after ``logs``: its last log that has a log_id (pages are in log_id order)."""
    for log in reversed(logs):
        log_id = log_id_of(log)
        if log_id is not None:
            return Checkpoint(log_id, log_date(log))
    return None


def log_id_of(log: object) -> str | None:
    """The log_id of a bare Management API entry (or a stream envelope), if it has one."""
    if not isinstance(log, dict):
        return None
    value = log.get("log_id")
    return value if isinstance(value, str) and value else None


def log_date(log: object) -> datetime | None:
    """The ``date`` of a bare entry or an envelope's data, timezone-aware, if it parses."""
    if not isinstance(log, dict):
        return None
    data = log.get("data")
    value = (data if isinstance(data, dict) else log).get("date")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def resume_hint(checkpoint: Checkpoint | None) -> str:
    """What the operator reads after a failure: where the checkpoint stands and how to go on."""
    if checkpoint is None:
        return "no page of this run was confirmed; run the same command again"
    return f"the checkpoint stays at log_id {checkpoint.log_id}: run `auth0-events backfill` again to resume"
