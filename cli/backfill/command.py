"""``auth0-events backfill``: bring in missed events from the Auth0 Management API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
import httpx

from cli.backfill import run as bf
from cli.common import Unavailable, echo_json, interactive, safe_broker_url, settings_or_exit
from kernel.routing import RouteSpecError, RouteTable, parse_routes
from kernel.settings import Settings
from kernel.storage.archive import InvalidQuery, parse_time

EXIT_INTERRUPTED = 130


@click.command()
@click.option("--from", "from_log_id", metavar="LOG_ID", help="Start with the logs after this log_id.")
@click.option(
    "--since",
    metavar="TIME",
    help="Start at the first log dated at or after TIME (ISO 8601, UTC unless it says: 2026-11-20T00:00Z).",
)
@click.option("--until", metavar="TIME", help="Stop before the first log dated at or after TIME.")
@click.option("--max-pages", type=click.IntRange(min=1), help="Stop after this many pages of logs.")
@click.option(
    "--take",
    type=click.IntRange(1, bf.MAX_TAKE),
    default=bf.MAX_TAKE,
    show_default=True,
    help="Logs per page.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=bf.DEFAULT_RATE,
    show_default=True,
    help="Management API requests per second (the Free plan allows 2).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=bf.RequestRetries.retries,
    show_default=True,
    help="Retries of a request that fails with a network error or a 5xx, with backoff.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def backfill(
    from_log_id: str | None,
    since: str | None,
    until: str | None,
    max_pages: int | None,
    take: int,
    rate: float,
    retries: int,
    as_json: bool,
) -> None:
    """Pull logs from the Management API by checkpoint and process them like the stream's.

    Starts after --from LOG_ID, at --since TIME, or else at the checkpoint saved by the previous run for
    AUTH0_DOMAIN. Each page is published to the broker, confirmed, and only then saved as the checkpoint,
    so an interrupted run resumes where it stopped. Events the ledger has processed are not sent again.
    Needs AUTH0_DOMAIN, AUTH0_CLIENT_ID and AUTH0_CLIENT_SECRET of an application with read:logs.
    Exit codes: 0 done, 1 refused (credentials, scope, no checkpoint), 3 Auth0/broker/database unreachable.
    """
    if from_log_id is not None and since is not None:
        raise click.UsageError("--from and --since exclude each other: give one")
    settings = settings_or_exit()
    credentials, routes = _credentials(settings), _routes(settings)
    limits = bf.Limits(max_pages, _time(until, "--until"))
    store = bf.CheckpointStore(settings.database_url, credentials.domain)
    progress = Progress(enabled=interactive())
    with _failures_explained(progress):
        # Read first, so an unreachable or unmigrated database costs no Auth0 requests either.
        start = bf.resolve_start(from_log_id, _time(since, "--since"), store.load())
        with (
            _publisher(settings, routes) as publisher,
            _logs_client(credentials, rate, retries, progress) as client,
        ):
            summary = bf.run_backfill(
                bf.log_pages(client, start, take),
                routes,
                publisher,
                store,
                limits,
                progress.page,
                run_id=f"backfill-{uuid.uuid4().hex[:8]}",
                after_log_id=start.after_log_id,
            )
            stats = client.stats
    progress.clear()
    _report(summary, stats, credentials.domain, as_json)


def _credentials(settings: Settings) -> bf.Credentials:
    named = {
        "AUTH0_DOMAIN": settings.auth0_domain,
        "AUTH0_CLIENT_ID": settings.auth0_client_id,
        "AUTH0_CLIENT_SECRET": settings.auth0_client_secret,
    }
    missing = [name for name, value in named.items() if not value.strip()]
    if missing:
        raise click.ClickException(
            f"{', '.join(missing)} not set: backfill needs a machine-to-machine application with read:logs"
        )
    domain = bf.normalize_domain(settings.auth0_domain)
    return bf.Credentials(domain, settings.auth0_client_id.strip(), settings.auth0_client_secret)


def _routes(settings: Settings) -> RouteTable:
    try:
        return parse_routes(settings.routes)
    except RouteSpecError as exc:
        raise click.ClickException(f"AUTH0_EVENTS_ROUTES: {exc}") from exc


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, option)
    except InvalidQuery as exc:
        raise click.BadParameter(exc.message, param_hint=option) from exc


@contextmanager
def _failures_explained(progress: Progress) -> Iterator[None]:
    """Expected failures as one clear line and an exit code; Ctrl-C leaves the checkpoint as it is."""
    try:
        yield
    except bf.ServiceUnavailable as exc:
        progress.clear()
        raise Unavailable(str(exc)) from exc
    except bf.BackfillError as exc:
        progress.clear()
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        progress.clear()
        click.echo(
            "interrupted: every confirmed page is saved in the checkpoint; run again to resume", err=True
        )
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _publisher(settings: Settings, routes: RouteTable) -> Iterator[bf.Publisher]:
    """The receiver's confirmed publisher, checked first so a dead broker costs no Auth0 requests."""
    from app.publisher import EventPublisher, PublishError
    from kernel.celery_app import app as celery_app

    publisher = EventPublisher(celery_app, settings.broker_url, routes.queues, settings.publish_timeout)
    try:
        try:
            publisher.check()
        except PublishError as exc:
            raise Unavailable(
                f"cannot reach the broker at {safe_broker_url(settings.broker_url)}: {exc}"
            ) from exc
        yield publisher
    finally:
        publisher.close()


@contextmanager
def _logs_client(
    credentials: bf.Credentials, rate: float, retries: int, progress: Progress
) -> Iterator[bf.LogsClient]:
    policy = bf.RequestRetries(retries=retries)
    pacer = bf.QuotaPacer(rate, progress.note, policy.max_rate_limit_wait)
    headers = {"User-Agent": "auth0-events-backfill"}
    with httpx.Client(timeout=bf.HTTP_TIMEOUT_SECONDS, headers=headers) as http:
        yield bf.LogsClient(credentials, http, pacer, progress.note, policy)


class Progress:
    """One line on stderr, redrawn after each page, when stderr is a terminal; notes always go to stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._drawn = False

    def page(self, summary: bf.Summary) -> None:
        """Redraw the progress line after a page."""
        if self.enabled:
            click.echo(f"\r\x1b[2K{progress_line(summary)}", err=True, nl=False)
            self._drawn = True

    def note(self, message: str) -> None:
        """Print a message (rate-limit waits, retries) on its own line."""
        self.clear()
        click.echo(message, err=True)

    def clear(self) -> None:
        """Remove the progress line."""
        if self._drawn:
            click.echo("\r\x1b[2K", err=True, nl=False)
            self._drawn = False


def progress_line(summary: bf.Summary) -> str:
    """``page 12 · 1,200 logs · 85.3 logs/s · at 9002026… 2026-11-20T03:00:00.000Z``."""
    checkpoint = summary.checkpoint
    where = ""
    if checkpoint is not None:
        date = bf.iso_millis(checkpoint.date) if checkpoint.date else "(no date)"
        where = f" · at {checkpoint.log_id} {date}"
    return (
        f"page {summary.pages} · {summary.logs_read:,} logs · {summary.published:,} published"
        f" · {summary.rate():.1f} logs/s{where}"
    )


def _report(summary: bf.Summary, stats: bf.ClientStats, domain: str, as_json: bool) -> None:
    result: dict[str, Any] = {"domain": domain, **summary.as_dict(), **vars(stats)}
    if as_json:
        echo_json(result)
        return
    click.echo(f"backfill of {domain} done: {summary.stopped}")
    for key in (
        "pages",
        "logs_read",
        "published",
        "filtered",
        "quarantined",
        "already_processed",
        "duplicates",
    ):
        click.echo(f"  {key.replace('_', ' '):<18} {result[key]:,}")
    checkpoint = result["checkpoint"] or "(unchanged)"
    click.echo(f"  {'checkpoint':<18} {checkpoint} {result['checkpoint_date'] or ''}".rstrip())
    click.echo(
        f"  {result['seconds']:.1f} s, {result['logs_per_second']} logs/s, {stats.requests} requests to"
        f" Auth0, {stats.rate_limit_waits} rate-limit waits, {stats.retries} retries"
    )
