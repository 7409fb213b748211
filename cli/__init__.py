"""The ``auth0-events`` command line: operate the service (routes now; dlq, backfill and more to come)."""

from __future__ import annotations

import json

import click

from cli.backfill import backfill
from cli.dlq import dlq
from cli.events import events
from cli.send import send
from cli.topology import topology
from tasks.catalogue import describe
from tasks.routing import RouteSpecError, parse_routes
from tasks.settings import ConfigurationError, get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="auth0-events")
def main() -> None:
    """Operate auth0-events: Auth0 log stream events as Celery tasks on RabbitMQ."""


for command in (events, dlq, backfill, send, topology):
    main.add_command(command)


@main.group()
def db() -> None:
    """The event archive and ledger database (DATABASE_URL)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up (or down) to this revision.")
def upgrade(revision: str) -> None:
    """Apply the database migrations; safe to run at every start (the Procfile's release process)."""
    from tasks.db import upgrade as run_upgrade

    try:
        settings = get_settings()
        run_upgrade(settings.database_url, revision)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"migrating {_safe_url(settings.database_url)} failed: {exc}") from exc
    click.echo(f"database {_safe_url(settings.database_url)} is at revision {revision}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def routes(as_json: bool) -> None:
    """Show which events AUTH0_EVENTS_ROUTES accepts and the queue each goes to."""
    try:
        table = parse_routes(get_settings().routes)
    except (RouteSpecError, ConfigurationError) as exc:
        raise click.ClickException(str(exc)) from exc
    rows = [("code", code, queue) for code, queue in sorted(table.by_code.items())]
    rows += [("category", category, queue) for category, queue in sorted(table.by_category.items())]
    if table.catch_all:
        rows.append(("everything else", "*", table.catch_all))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "routes": [dict(zip(("kind", "selector", "queue"), row, strict=True)) for row in rows],
                    "queues": list(table.queues),
                },
                indent=2,
            )
        )
        return
    for kind, selector, queue in rows:
        name = describe(selector).name if kind == "code" else ""
        click.echo(f"{selector:<24} {queue:<32} {kind} {name}".rstrip())
    click.echo(f"\nwork queues ({len(table.queues)}): {','.join(table.queues)}")
