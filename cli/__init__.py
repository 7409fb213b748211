"""The ``auth0-events`` command line: operate the service (routes now; dlq, backfill and more to come)."""

from __future__ import annotations

import click

from cli.backfill.command import backfill
from cli.dlq.command import dlq
from cli.events import events
from cli.routes import routes
from cli.send.command import send
from cli.topology import topology
from kernel.settings import ConfigurationError, get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="auth0-events")
def main() -> None:
    """Operate auth0-events: Auth0 log stream events as Celery tasks on RabbitMQ."""


for command in (events, dlq, backfill, send, topology, routes):
    main.add_command(command)


@main.group()
def db() -> None:
    """The event archive and ledger database (DATABASE_URL)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up (or down) to this revision.")
def upgrade(revision: str) -> None:
    """Apply the database migrations; safe to run at every start (the Procfile's release process)."""
    from kernel.storage.db import migrate, safe_url

    try:
        url = get_settings().database_url
        reached = migrate(url, revision)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"migrating {safe_url(url)} failed: {exc}") from exc
    at = ", ".join(reached.current) or "base (no schema)"
    click.echo(f"database {safe_url(url)} is at revision {at}{' (head)' if reached.at_head else ''}")
