"""``auth0-events events``: search the event archive and show one archived event."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session

from kernel.settings import Settings
from kernel.storage import archive
from kernel.storage.db import session_scope
from kernel.storage.explain import error_reason, missing_sqlite_file, safe_url

F = TypeVar("F", bound=Callable[..., Any])
TABLE_COLUMNS = ("date", "type", "log_id", "user", "ip", "state", "attempts")


def database_option(command: F) -> F:
    """The ``--database-url`` option shared by the commands, read from DATABASE_URL by default."""
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        default=Settings.model_fields["database_url"].default,
        show_default=True,
        show_envvar=True,
        help="The archive's database.",
    )(command)


@click.group()
def events() -> None:
    """Search the archive of every event the workers received (DATABASE_URL)."""


@events.command()
@click.option("--type", "types", multiple=True, help="Event code, repeatable or comma-separated (f,fp).")
@click.option("--user", help="user_id or user_name, exactly.")
@click.option("--ip", help="Client IP address, exactly.")
@click.option("--since", help="Events dated at or after this ISO 8601 time or date (UTC unless it says).")
@click.option("--until", help="Events dated before this ISO 8601 time or date.")
@click.option("--state", type=click.Choice(archive.STATES), help="Processing state.")
@click.option(
    "--limit",
    type=click.IntRange(1, archive.MAX_LIMIT),
    default=archive.DEFAULT_LIMIT,
    show_default=True,
    help="Events per page.",
)
@click.option("--after", help="Cursor of the previous page, as printed after it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.option("--include-raw", is_flag=True, help="With --json: add the record as Auth0 sent it.")
@database_option
def search(
    types: tuple[str, ...],
    user: str | None,
    ip: str | None,
    since: str | None,
    until: str | None,
    state: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
    include_raw: bool,
    database_url: str,
) -> None:
    """List archived events, newest first; events without a date come last."""
    try:
        filters = archive.EventFilters(
            types=archive.parse_types(types),
            user=user or None,
            ip=ip or None,
            since=archive.parse_time(since, "since") if since else None,
            until=archive.parse_time(until, "until") if until else None,
            state=state,
            limit=limit,
            after=after or None,
        )
    except archive.InvalidQuery as exc:
        raise click.BadParameter(exc.message, param_hint=f"'--{exc.parameter}'") from exc
    with _archive_session(database_url) as session:
        page = archive.search_events(session, filters)
        rows = [archive.event_to_dict(event, include_raw) for event in page.events]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        _print_table(rows)
    if page.next_cursor:
        # On stderr, so that --json output stays one event per line.
        click.echo(f"more events: repeat with --after {page.next_cursor}", err=True)


@events.command()
@click.argument("log_id")
@click.option("--json", "as_json", is_flag=True, help="Print the event as one JSON object.")
@database_option
def show(log_id: str, as_json: bool, database_url: str) -> None:
    """Show everything archived about one event, its raw record included."""
    try:
        archive.check_text(log_id, "log_id")
    except archive.InvalidQuery as exc:
        raise click.BadParameter(exc.message, param_hint="'LOG_ID'") from exc
    with _archive_session(database_url) as session:
        event = archive.get_event(session, log_id)
        if event is None:
            raise click.ClickException(f"no archived event has log_id {log_id!r}")
        record = archive.event_to_dict(event, include_raw=True)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    raw = record.pop("raw")
    width = max(len(key) for key in record)
    for key, value in record.items():
        click.echo(f"{key:<{width}}  {'-' if value is None or value == '' else value}")
    click.echo("raw:")
    click.echo(json.dumps(raw, indent=2))


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no events match", err=True)
        return
    cells = [
        (
            row["date"] or "-",
            row["type"],
            row["log_id"],
            row["user_name"] or row["user_id"] or "-",
            row["ip"] or "-",
            row["state"],
            str(row["attempts"]),
        )
        for row in rows
    ]
    lines = [TABLE_COLUMNS, *cells]
    widths = [max(len(line[column]) for line in lines) for column in range(len(TABLE_COLUMNS))]
    for line in lines:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@contextmanager
def _archive_session(url: str) -> Iterator[Session]:
    """A session on the archive; raises ClickException, without a traceback, when it cannot be read."""
    shown = safe_url(url)
    _require_sqlite_file(url, shown)
    try:
        with session_scope(url, read_only=True) as session:
            yield session
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"cannot read the event archive at {shown}: {error_reason(exc)} "
            "(is the database up, and migrated with `auth0-events db upgrade`?)"
        ) from exc


def _require_sqlite_file(url: str, shown: str) -> None:
    # SQLite would create a missing file and then report a missing table: name the real problem instead.
    try:
        missing = missing_sqlite_file(url)
    except ArgumentError as exc:
        raise click.ClickException(
            "--database-url (or DATABASE_URL) is not a database URL such as sqlite:///auth0-events.sqlite3 "
            "or postgresql://user@host/db"
        ) from exc
    if missing:
        raise click.ClickException(f"no event archive at {shown}: the file {missing} does not exist")
