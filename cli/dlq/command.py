"""``auth0-events dlq``: inspect, replay and purge the dead-letter queues (the logic: dead_letters.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import click
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from cli.common import Unavailable, connect_broker, echo_json, interactive, safe_broker_url
from cli.dlq import dead_letters
from cli.dlq.dead_letters import DeadLetter, LedgerEntry, Selection, Tally, TallyReport
from kernel.routing import RouteSpecError, parse_routes
from kernel.settings import ConfigurationError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])
LIST_COLUMNS = ("died (UTC)", "type", "tries", "log_id", "reason")


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration such as 90s, 10m, 2h, 1d or 1h30m."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        """Parse the option's text; a bad value is a usage error naming the option."""
        if isinstance(value, timedelta):
            return value
        try:
            return dead_letters.parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Rate(click.ParamType):  # type: ignore[type-arg]
    """Messages per second: a finite number from MIN_RATE to MAX_RATE."""

    name = "rate"
    MIN_RATE, MAX_RATE = 0.001, 1_000_000.0

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """Parse the option's text; NaN, infinities and rates the pacer cannot space are usage errors."""
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = math.nan
        if not self.MIN_RATE <= rate <= self.MAX_RATE:  # False for NaN too
            self.fail(f"{value!r} is not a number of messages per second from {self.MIN_RATE:g} to "
                      f"{self.MAX_RATE:g}", param, ctx)  # fmt: skip
        return rate


def _check_types(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """Each --type must name a code between its commas: an empty one would filter nothing."""
    for value in values:
        codes = [code.strip() for code in value.split(",")]
        if not any(codes):
            raise click.BadParameter(f"{value!r} names no event code", ctx, param)
        if not all(codes):
            raise click.BadParameter(
                f"{value!r} has an empty event code (two commas, or one at an end)", ctx, param
            )
    return values


def _check_log_ids(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """A blank --log-id is a mistake, not a filter."""
    if any(not value.strip() for value in values):
        raise click.BadParameter("a log_id cannot be empty", ctx, param)
    return values


def queue_option(command: F) -> F:
    """``--queue``: which DLQs, by work queue or DLQ name; all configured ones by default."""
    return click.option(
        "--queue",
        "queues",
        multiple=True,
        metavar="QUEUE",
        help="A work queue (auth0.ss) or its DLQ (auth0.ss.dlq); repeatable. Default: every configured one.",
    )(command)


def type_option(command: F) -> F:
    """``--type``: event codes, repeatable or comma-separated."""
    return click.option(
        "--type",
        "types",
        multiple=True,
        callback=_check_types,
        help="Event code, repeatable or comma-separated (f,fp).",
    )(command)


def filter_options(command: F) -> F:
    """The message filters replay and purge share."""
    for option in reversed(
        (
            click.option(
                "--log-id",
                "log_ids",
                multiple=True,
                callback=_check_log_ids,
                help="This event's message; repeatable.",
            ),
            click.option(
                "--older-than", type=Duration(), help="Dead-lettered longer ago than this (2h, 1d)."
            ),
            click.option("--newer-than", type=Duration(), help="Dead-lettered within this (10m, 2h)."),
            click.option("--limit", type=click.IntRange(min=1), help="At most this many messages."),
        )
    ):
        command = option(command)
    return queue_option(type_option(command))


def json_option(command: F) -> F:
    """``--json``: print JSON for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


@click.group()
def dlq() -> None:
    """Inspect, replay and purge the dead-letter queues (<queue>.dlq).

    Reads and writes go over AMQP (BROKER_URL); the reasons come from the ledger (DATABASE_URL).
    An unreachable broker exits with status 3.
    """


@dlq.command("list", short_help="Count and show the dead-lettered messages.")
@queue_option
@type_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show at most this many messages (the counts are always complete).",
)
@json_option
def list_command(queues: tuple[str, ...], types: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Count each DLQ's messages and show them: log_id, type, reason, tries, when they died.

    Nothing is acked: every message stays in its DLQ, in its place.
    """
    settings, dlqs = _setup(queues)
    with _broker(settings) as connection:
        listings = dead_letters.list_dead_letters(connection, dlqs, Selection(_codes(types), limit=limit))
    ledger = _ledger(settings, [letter for listing in listings for letter in listing.letters])
    if as_json:
        echo_json({"queues": [_listing_json(listing, ledger) for listing in listings]})
        return
    for listing in listings:
        _print_listing(listing, ledger)
    shown = sum(len(listing.letters) for listing in listings)
    if shown == limit:
        click.echo(f"showing the first {limit} matching messages; see more with --limit", err=True)


@dlq.command(short_help="Show one dead-lettered message whole.")
@click.argument("log_id")
@queue_option
@json_option
def show(log_id: str, queues: tuple[str, ...], as_json: bool) -> None:
    """Show the dead-lettered message of LOG_ID whole: reason, properties, headers and the record.

    Exits with status 1 when no DLQ holds it. Nothing is acked.
    """
    settings, dlqs = _setup(queues)
    with _broker(settings) as connection:
        listings = dead_letters.list_dead_letters(connection, dlqs, Selection(log_ids=frozenset({log_id})))
    letters = [letter for listing in listings for letter in listing.letters]
    if not letters:
        raise click.ClickException(f"no message with log_id {printable(log_id)} in {', '.join(dlqs)}")
    ledger = _ledger(settings, letters)
    messages = [dead_letters.details(letter, ledger) for letter in letters]
    if as_json:
        echo_json({"log_id": log_id, "messages": messages})
        return
    for message in messages:
        _print_details(message)


@dlq.command(short_help="Move messages back to their work queue.")
@filter_options
@click.option(
    "--rate",
    type=Rate(),
    help="At most this many messages per second (0.001 to 1000000), to spare the workers. "
    "Default: as fast as confirmed.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; change nothing.")
@json_option
def replay(
    queues: tuple[str, ...],
    types: tuple[str, ...],
    log_ids: tuple[str, ...],
    older_than: timedelta | None,
    newer_than: timedelta | None,
    limit: int | None,
    rate: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Move dead-lettered messages back to their work queue, with their retry count reset.

    Each message is published to exchange auth0.events with its source queue as routing key, confirmed
    by the broker, and only then removed from its DLQ: an interrupted replay loses nothing, and the
    ledger makes a message replayed twice harmless (run the command again to finish). Messages that do
    not match stay in the DLQ, in place.
    """
    settings, dlqs = _setup(queues)
    selection = _selection(types, log_ids, older_than, newer_than, limit)
    progress = _Progress("would replay" if dry_run else "replayed", show_each=dry_run and not as_json)
    with _counting_failure(progress, "replayed"), _broker(settings) as connection:
        report = dead_letters.replay(
            connection,
            dlqs,
            selection,
            rate=rate,
            dry_run=dry_run,
            confirm_timeout=settings.publish_timeout,
            on_each=progress,
        )
    _print_report(report, "replayed", dry_run, as_json)


@dlq.command(short_help="Delete messages for good.")
@filter_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Print what would be purged; change nothing.")
@json_option
def purge(
    queues: tuple[str, ...],
    types: tuple[str, ...],
    log_ids: tuple[str, ...],
    older_than: timedelta | None,
    newer_than: timedelta | None,
    limit: int | None,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Delete dead-lettered messages for good, after a confirmation (or --yes).

    Without filters each selected DLQ is emptied; with filters only the matching messages are deleted
    and the rest stay in place. The ledger keeps each event and its reason.
    """
    settings, dlqs = _setup(queues)
    selection = _selection(types, log_ids, older_than, newer_than, limit)

    def confirm(tallies: Sequence[Tally]) -> bool:
        return yes or click.confirm(_purge_question(tallies, selection), default=False, abort=True, err=True)

    with _broker(settings) as connection:
        report = dead_letters.purge(connection, dlqs, selection, confirm, dry_run=dry_run)
    _print_report(report, "purged", dry_run, as_json)


def _setup(queues: Sequence[str]) -> tuple[Settings, list[str]]:
    """The settings and the DLQs to work on; a bad configuration or --queue is a clean error."""
    # Read here rather than through the cached get_settings(): one invocation, the environment it runs in.
    try:
        settings = load_settings()
        work_queues = parse_routes(settings.routes).queues
    except (ConfigurationError, RouteSpecError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        return settings, dead_letters.select_queues(work_queues, queues)
    except dead_letters.UnknownQueue as exc:
        raise click.BadParameter(str(exc), param_hint="'--queue'") from exc


def _codes(types: Sequence[str]) -> frozenset[str]:
    return frozenset(code.strip() for value in types for code in value.split(",") if code.strip())


def _selection(
    types: Sequence[str],
    log_ids: Sequence[str],
    older_than: timedelta | None,
    newer_than: timedelta | None,
    limit: int | None,
) -> Selection:
    if older_than is not None and newer_than is not None and older_than >= newer_than:
        raise click.BadParameter(
            "nothing is both dead-lettered longer ago than --older-than and within --newer-than",
            param_hint="'--older-than' / '--newer-than'",
        )
    return Selection(_codes(types), frozenset(log_ids), older_than, newer_than, limit)


@contextmanager
def _broker(settings: Settings) -> Iterator[Connection]:
    """A broker connection; losing it is Unavailable (exit 3), a refusal a plain error (exit 1)."""
    connection = connect_broker(settings, timeout=settings.publish_timeout)
    where = safe_broker_url(settings.broker_url)
    try:
        yield connection
    except TimeoutError as exc:
        raise Unavailable(f"the broker at {where} did not answer within {settings.publish_timeout}s") from exc
    except (*connection.connection_errors, OperationalError) as exc:
        raise Unavailable(f"lost the broker at {where}: {exc}") from exc
    except dead_letters.PublishRefused as exc:
        raise click.ClickException(str(exc)) from exc
    except connection.channel_errors as exc:
        raise click.ClickException(f"the broker refused: {exc}") from exc
    finally:
        try:
            # Whatever was fetched and not acked returns to its DLQ, in place (cli.dlq.dead_letters).
            connection.release()
        except (*connection.connection_errors, *connection.channel_errors):
            connection.collect()


@contextmanager
def _counting_failure(progress: _Progress, verb: str) -> Iterator[None]:
    """On an error, say how far the command got and that running it again finishes the rest."""
    try:
        yield
    except click.ClickException as exc:
        if not progress.count:
            raise
        kind = Unavailable if isinstance(exc, Unavailable) else click.ClickException
        raise kind(
            f"{exc.message} ({progress.count} message(s) were {verb} before that; the others are still "
            "in their DLQ: run the command again)"
        ) from exc
    finally:
        progress.done()


class _Progress:
    """Counts messages; on a terminal redraws one progress line, and prints each when asked to."""

    def __init__(self, verb: str, show_each: bool) -> None:
        self.verb, self.show_each, self.count = verb, show_each, 0
        self._drawn = False

    def __call__(self, letter: DeadLetter) -> None:
        self.count += 1
        if self.show_each:
            shown = (letter.dlq, letter.event_type or "-", letter.log_id or "-")
            click.echo(f"{self.verb} {' '.join(map(printable, shown))}")
        elif interactive():
            click.echo(f"\r{self.verb} {self.count} (now {letter.dlq})", nl=False, err=True)
            self._drawn = True

    def done(self) -> None:
        """End the progress line, if one was drawn."""
        if self._drawn:
            click.echo(err=True)
            self._drawn = False


def _ledger(settings: Settings, letters: Sequence[DeadLetter]) -> dict[str, LedgerEntry]:
    try:
        return dead_letters.ledger_entries(
            settings.database_url, (letter.log_id for letter in letters if letter.log_id)
        )
    except dead_letters.LedgerUnavailable as exc:
        click.echo(f"warning: {exc}; the reasons shown are RabbitMQ's x-death only", err=True)
        return {}


def _listing_json(listing: dead_letters.Listing, ledger: dict[str, LedgerEntry]) -> dict[str, Any]:
    return {
        "queue": listing.dlq,
        "declared": listing.depth is not None,
        "messages": listing.depth or 0,
        "shown": [dead_letters.summary(letter, ledger) for letter in listing.letters],
    }


def _print_listing(listing: dead_letters.Listing, ledger: dict[str, LedgerEntry]) -> None:
    if listing.depth is None:
        click.echo(f"{listing.dlq}: not declared on the broker (run a worker or the receiver once)")
        return
    click.echo(f"{listing.dlq}: {listing.depth} message(s)")
    rows = [
        (
            letter.died_at.strftime("%Y-%m-%d %H:%M:%S") if letter.died_at else "-",
            printable(letter.event_type or "-"),
            str(letter.tries),
            printable(letter.log_id or "-"),
            printable(dead_letters.reason(letter, ledger)),
        )
        for letter in listing.letters
    ]
    if not rows:
        return
    lines = [LIST_COLUMNS, *rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(LIST_COLUMNS) - 1)]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        click.echo("  " + "  ".join([*cells, line[-1]]))


def _print_details(message: dict[str, Any]) -> None:
    fields = ("log_id", "event_type", "dlq", "source_queue", "reason", "tries", "died_at", "task_id")
    for name in fields:
        click.echo(f"{name:<13} {printable(str(message[name])) if message[name] is not None else '-'}")
    ledger = message["ledger"]
    if ledger:
        click.echo(f"{'ledger':<13} {ledger['state']}, {ledger['attempts']} attempt(s)")
    for section in ("properties", "headers", "record", "task_kwargs", "body"):
        if message[section] is not None:
            click.echo(f"{section}:")
            click.echo(json.dumps(message[section], indent=2, sort_keys=True))


def _print_report(report: TallyReport, verb: str, dry_run: bool, as_json: bool) -> None:
    done = verb if report.applied else f"would be {verb}"
    if as_json:
        echo_json(
            {
                "dry_run": dry_run,
                "queues": [
                    {"queue": t.dlq, verb: t.taken, "skipped": t.skipped, "log_ids": t.log_ids}
                    for t in report.tallies
                ],
                verb: sum(t.taken for t in report.tallies),
                "skipped": sum(t.skipped for t in report.tallies),
            }
        )
        return
    width = max([len(t.dlq) for t in report.tallies] + [5])
    for tally in report.tallies:
        click.echo(f"{tally.dlq:<{width}}  {done} {tally.taken}  skipped {tally.skipped}")
    total = sum(t.taken for t in report.tallies)
    click.echo(f"{'total':<{width}}  {done} {total}  skipped {sum(t.skipped for t in report.tallies)}")


def _purge_question(tallies: Sequence[Tally], selection: Selection) -> str:
    counts = ", ".join(f"{t.dlq} ({t.taken})" for t in tallies if t.taken)
    scope = "matching " if selection.filters_messages else "all "
    total = sum(t.taken for t in tallies)
    return f"Delete {scope}{total} message(s) for good from {counts}?"


def printable(text: str) -> str:
    """``text`` safe to print: what a message may hold that a terminal acts on (escape sequences) or
    that stdout cannot encode (a lone surrogate) is written as a Python escape (``\\x1b``, ``\\ud800``).
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in text)
