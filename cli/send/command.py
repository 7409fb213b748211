"""``auth0-events send``: POST realistic sample Auth0 log records to a receiver."""

from __future__ import annotations

import time

import click

from cli.common import Unavailable, echo_json, interactive
from cli.send.samples import SampleGenerator, parse_types
from cli.send.sender import (
    BODY_FORMATS,
    SendAborted,
    SendOptions,
    SendStats,
    parse_rate,
    payload_url,
    send_batches,
)

DEFAULT_BATCH_SIZE = 20


@click.command()
@click.argument("url")
@click.option(
    "--token",
    envvar="AUTH0_EVENTS_SEND_TOKEN",
    show_envvar=True,
    required=True,
    help="Sent verbatim in Authorization, as Auth0 does ('Bearer <token>' works too).",
)
@click.option("--count", type=click.IntRange(min=1), default=100, show_default=True, help="Records to send.")
@click.option("--rate", help="At most this many records per second: 50, 50/s, 600/m. [default: no limit]")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help=f"Records per request. [default: {DEFAULT_BATCH_SIZE}; 1 with --format object]",
)
@click.option(
    "--format",
    "body_format",
    type=click.Choice(BODY_FORMATS),
    default="jsonlines",
    show_default=True,
    help="Body format, as the stream's Content Format setting: object is one record per request.",
)
@click.option(
    "--types",
    default="mix",
    show_default=True,
    help="Comma-separated event codes (s,f,fp), each equally likely; 'mix' is a realistic weighted mix.",
)
@click.option(
    "--duplicates",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of records repeating an earlier log_id of the same request.",
)
@click.option(
    "--invalid",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of invalid records (no type, no log_id, not an object) for the quarantine.",
)
@click.option("--seed", type=int, help="Seed for the same records on every run (dates aside).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="Times a 503 is retried, after its Retry-After (at most 60 s).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def send(
    url: str,
    token: str,
    count: int,
    rate: str | None,
    batch_size: int | None,
    body_format: str,
    types: str,
    duplicates: float,
    invalid: float,
    seed: int | None,
    timeout: float,
    retries: int,
    as_json: bool,
) -> None:
    """Generate realistic Auth0 log records and POST them to URL, as an Auth0 log stream does.

    URL is the receiver's payload URL; a bare http(s)://host:port gets /webhooks/auth0. Prints what was
    sent and what the receiver answered (accepted, filtered, quarantined, duplicates, HTTP statuses).
    Exit 1: a request failed (non-2xx after retries, or a timeout). Exit 3: the receiver cannot be reached.
    """
    try:
        target = payload_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'URL'") from exc
    try:
        rate_per_second = parse_rate(rate) if rate is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--rate'") from exc
    try:
        codes = parse_types(types)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--types'") from exc
    if body_format == "object" and batch_size not in (None, 1):
        raise click.BadParameter(
            "the object format sends one record per request", param_hint="'--batch-size'"
        )
    if duplicates + invalid > 1:
        raise click.BadParameter("--duplicates and --invalid add up to more than 1", param_hint="'--invalid'")

    size = 1 if body_format == "object" else batch_size or DEFAULT_BATCH_SIZE
    batches = SampleGenerator(codes, seed=seed).batches(count, size, duplicates, invalid)
    options = SendOptions(body_format=body_format, rate=rate_per_second, max_retries=retries, timeout=timeout)
    progress = _Progress(count) if interactive() else None
    try:
        stats = send_batches(target, token, batches, options, progress)
    except SendAborted as exc:
        _finish(progress, exc.stats, as_json, show_errors=False)
        if exc.unreachable:
            raise Unavailable(str(exc)) from exc
        raise click.ClickException(str(exc)) from exc
    _finish(progress, stats, as_json)
    if stats.interrupted:
        raise click.ClickException(f"interrupted after {stats.requests} request(s)")
    if stats.failed_requests:
        raise click.ClickException(f"{stats.failed_requests} of {stats.requests} request(s) failed")


class _Progress:
    """One line on stderr, redrawn at most five times a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.drawn = False
        self._last = 0.0

    def __call__(self, stats: SendStats, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        self.drawn = True
        click.echo(
            f"\rsent {stats.records}/{self.total} records in {_plural(stats.requests, 'request')}, "
            f"{stats.records_per_second:.1f} records/s, {stats.failed_requests} failed\x1b[K",
            err=True,
            nl=False,
        )


def _finish(progress: _Progress | None, stats: SendStats, as_json: bool, show_errors: bool = True) -> None:
    if progress is not None and progress.drawn:
        progress(stats, force=True)
        click.echo(err=True)
    if as_json:
        echo_json(stats.to_dict())
        return
    summary = stats.to_dict()
    click.echo(
        f"sent {_plural(stats.records, 'record')} in {_plural(stats.requests, 'request')} to {stats.url} "
        f"in {stats.elapsed:.2f} s ({stats.records_per_second:.1f} records/s)"
    )
    click.echo(
        "receiver: {accepted} accepted, {filtered} filtered, {quarantined} quarantined, "
        "{duplicates} duplicates (of {received} received)".format(**summary)
    )
    generated = summary["generated"]
    if generated["duplicates"] or generated["invalid"]:
        click.echo(f"generated: {generated['duplicates']} duplicates, {generated['invalid']} invalid")
    statuses = ", ".join(f"{status}: {count}" for status, count in summary["statuses"].items()) or "none"
    click.echo(f"HTTP statuses: {statuses}; {stats.retries} retries after 503")
    if show_errors and summary["errors"]:
        click.echo("errors:", err=True)
        for message, count in summary["errors"].items():
            click.echo(f"  {count} x {message}", err=True)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
