"""``auth0-events stream``: the log stream's health (``status``) and the watch that fills its gaps."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from types import FrameType

import click

from cli.common import Unavailable, echo_json, settings_or_exit
from cli.management import api, wiring
from cli.management.fill import CheckpointStore, Publisher
from cli.management.logs import LogsClient, iso_millis
from cli.stream import metrics
from cli.stream.health import Health, check_health
from cli.stream.lease import Lease
from cli.stream.streams import StreamsClient
from cli.stream.watch import Watcher, WatchOptions
from kernel.logging_setup import configure_logging
from kernel.routing import RouteTable
from kernel.settings import Settings
from kernel.storage.archive import InvalidQuery, parse_time

NEEDS = "read:logs and read:log_streams (update:log_streams to resume a stream)"
logger = logging.getLogger(__name__)


@click.group()
def stream() -> None:
    """Watch the Auth0 log stream that delivers to this service, and fill the gaps it leaves."""


@stream.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status(as_json: bool) -> None:
    """Show the tenant's log streams (marking those pointing at us), our last received event, Auth0's
    newest log and the gap between them.

    Exit codes: 0 healthy; 1 a stream pointing at us is not active, none points at us, or a gap is open
    (Auth0's newest routed log is older than AUTH0_EVENTS_WATCH_GRACE and was never received); 3 Auth0 or
    the database cannot be reached. Needs read:logs and read:log_streams.
    """
    settings = settings_or_exit()
    routes = wiring.routes(settings)
    with _explained(), _clients(settings, rate=settings.watch_rate) as (streams, logs):
        health = check_health(
            streams, logs, settings.database_url, routes, settings.stream_id, settings.watch_grace
        )
    if as_json:
        echo_json(health.as_dict())
    else:
        _print(health)
    if not health.healthy:
        raise click.exceptions.Exit(1)


@stream.command()
@click.option("--once", is_flag=True, help="Run one pass and exit (for cron and tests).")
@click.option(
    "--since",
    metavar="TIME",
    help="The first pass walks from the first log dated at or after TIME instead of the checkpoint.",
)
@click.option("--json", "as_json", is_flag=True, help="With --once: print the pass's report as JSON.")
def watch(once: bool, since: str | None, as_json: bool) -> None:
    """Every AUTH0_EVENTS_WATCH_INTERVAL seconds: read the streams' status, fill every gap older than
    AUTH0_EVENTS_WATCH_GRACE from the Management API, and resume a paused or suspended stream when
    AUTH0_EVENTS_WATCH_RESUME is on.

    Several watchers may run: one acts (a lease in DATABASE_URL), the others stand by. Serves its metrics
    on AUTH0_EVENTS_METRICS_PORT. Runs on when Auth0, the broker or the database fails, saying so.
    Exit codes with --once: 0 the pass ran (or stood by), 1 refused (credentials, scopes), 3 Auth0, the
    broker or the database could not be reached.
    """
    settings = settings_or_exit()
    configure_logging(settings)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would drown the passes'
    start = _time(since)
    stop = _stop_on_sigterm()
    missing = wiring.missing_credentials(settings)
    if missing and not once:
        _stand_idle(settings, missing, stop)
        return
    with watcher_for(settings, start) as watcher:
        if once:
            report = watcher.run_pass()
            if as_json:
                echo_json(report.as_dict())
            if report.outcome in ("auth0_unavailable", "unavailable"):
                raise click.exceptions.Exit(Unavailable.exit_code)
            if report.outcome == "refused":
                raise click.exceptions.Exit(1)
            return
        metrics.serve(settings.metrics_port)
        logger.info("stream watch started: a pass every %g s", settings.watch_interval)
        while not stop.is_set():
            _guarded_pass(watcher)
            stop.wait(settings.watch_interval)
    logger.info("stream watch stopped")


@contextmanager
def watcher_for(settings: Settings, since: datetime | None = None) -> Iterator[Watcher]:
    """A Watcher as `stream watch` runs it: the tenant's clients, the confirmed publisher, the lease."""
    routes = wiring.routes(settings)
    options = WatchOptions(
        settings.stream_id, settings.watch_grace, settings.watch_resume, settings.watch_readyz_url
    )
    lease = Lease(settings.database_url, settings.watch_lease)
    with ExitStack() as stack:
        streams, logs = stack.enter_context(_clients(settings, rate=settings.watch_rate))
        publisher = stack.enter_context(_publisher(settings, routes))
        store = CheckpointStore(settings.database_url, logs.credentials.domain, skip="received")
        try:
            yield Watcher(options, streams, logs, publisher, store, lease, routes, since)
        finally:
            _release(lease)  # a clean stop: another watcher need not wait for the lease to expire


def _stand_idle(settings: Settings, missing: list[str], stop: threading.Event) -> None:
    """Run on without watching: the Procfile starts the watcher beside the receiver, and honcho (scripts/run)
    stops every process when one exits, so a tenant without Management API credentials must not end it."""
    metrics.CONFIGURED.set(0)
    metrics.serve(settings.metrics_port)
    logger.warning(
        "stream watch is off: %s not set (a machine-to-machine application with %s); it runs on idle "
        "until they are set and it is restarted",
        ", ".join(missing),
        NEEDS,
    )
    stop.wait()
    logger.info("stream watch stopped")


def _guarded_pass(watcher: Watcher) -> None:
    try:
        watcher.run_pass()
    except Exception:  # a bug in a pass must not end the watch: the next pass may well succeed
        logger.exception("stream watch pass failed unexpectedly")


def _release(lease: Lease) -> None:
    try:
        lease.release()
    except api.ServiceUnavailable as exc:
        logger.warning("could not release the watcher lease (it expires on its own): %s", exc)


def _stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so the loop ends between passes and releases the lease."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


@contextmanager
def _clients(settings: Settings, rate: float) -> Iterator[tuple[StreamsClient, LogsClient]]:
    """The tenant's log-streams and logs clients: one HTTP client, one token, one pacer."""
    credentials = wiring.credentials(settings, NEEDS)
    policy = api.RequestRetries()
    pacer = api.QuotaPacer(rate, _note, policy.max_rate_limit_wait)
    with wiring.http_client("auth0-events-stream-watch") as http:
        streams = StreamsClient(credentials, http, pacer, _note, policy)
        logs = LogsClient(credentials, http, pacer, _note, policy)
        logs.tokens = streams.tokens  # one token for both
        yield streams, logs


@contextmanager
def _publisher(settings: Settings, routes: RouteTable) -> Iterator[Publisher]:
    """The confirmed publisher, not checked first: the watch runs on while the broker is down."""
    from app.publisher import EventPublisher
    from kernel.celery_app import app as celery_app

    publisher = EventPublisher(
        celery_app, settings.broker_url, routes.queues, settings.publish_timeout, settings.queue_type
    )
    try:
        yield publisher
    finally:
        publisher.close()


@contextmanager
def _explained() -> Iterator[None]:
    try:
        yield
    except api.ServiceUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    except api.BackfillError as exc:
        raise click.ClickException(str(exc)) from exc


def _note(message: str) -> None:
    logger.warning("%s", message)


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, "--since")
    except InvalidQuery as exc:
        raise click.BadParameter(exc.message, param_hint="--since") from exc


def _print(health: Health) -> None:
    now = health.checked_at
    click.echo("log streams (* points at us):")
    if not health.streams:
        click.echo("  (none)")
    for item in health.streams:
        mark = "*" if item.ours else " "
        where = f" -> {item.endpoint}" if item.endpoint else ""
        click.echo(f"{mark} {item.id}  {item.status:<9} {item.type:<10} {item.name!r}{where}")
    last = health.last_received
    if last is None:
        click.echo("last received: none (the stream never delivered an event)")
    else:
        age = last.as_dict(now)["age_seconds"]
        date = iso_millis(last.date) if last.date else "(no date)"
        click.echo(f"last received: {last.log_id} dated {date}, {age:g} s ago")
    newest = health.newest
    if newest is None:
        click.echo("newest log at Auth0: none")
    else:
        date = iso_millis(newest.date) if newest.date else "(no date)"
        click.echo(f"newest log at Auth0: {newest.log_id} dated {date}")
    gap = health.gap
    seconds = "" if gap.seconds is None else f", {gap.seconds:g} s between them"
    click.echo(f"gap: {'OPEN' if gap.open else 'none'} ({gap.reason}{seconds})")
    if not health.ours:
        click.echo(
            "no log stream points at us (AUTH0_EVENTS_STREAM_ID, or an http stream to /webhooks/auth0)"
        )
