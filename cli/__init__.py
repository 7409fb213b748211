"""The ``auth0-events`` command line: routes, db, events, dlq, backfill, send, stream and topology.

Each command's module is imported only when that command runs or shows its own help, so a command loads
the libraries it uses and no other's: ``auth0-events --help`` and ``auth0-events routes`` load neither
Flask nor the worker's Celery app.
"""

from __future__ import annotations

import importlib

import click

#: Each command: where it is defined, and the first sentence of its help, which ``auth0-events --help``
#: shows without importing the command (tests/test_layout.py checks it is the command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    "backfill": (
        "cli.backfill.command:backfill",
        "Pull logs from the Management API by checkpoint and process them like the stream's.",
    ),
    "dlq": ("cli.dlq.command:dlq", "Inspect, replay and purge the dead-letter queues (<queue>.dlq)."),
    "events": (
        "cli.events:events",
        "Search the archive of every event the workers received (DATABASE_URL).",
    ),
    "routes": (
        "cli.routes:routes",
        "Show which events AUTH0_EVENTS_ROUTES accepts and the queue each goes to, the codes it filters "
        "out, and the handlers a worker loads, warning about each one that listens to codes the routes "
        "drop.",
    ),
    "send": (
        "cli.send.command:send",
        "Generate realistic Auth0 log records and POST them to URL, as an Auth0 log stream does.",
    ),
    "stream": (
        "cli.stream.command:stream",
        "Watch the Auth0 log stream that delivers to this service, and fill the gaps it leaves.",
    ),
    "topology": ("cli.topology.command:topology", "Declare, inspect and migrate exchanges, queues and DLQs."),
}


class LazyGroup(click.Group):
    """A group whose COMMANDS are imported when used; its help lists them from their first sentence."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted, as click lists them."""
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, its module imported now when it is one of COMMANDS."""
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, name = COMMANDS[cmd_name][0].partition(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The Commands section as click writes it, with COMMANDS' lines from their first sentence."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, _short_help(self, ctx, name, limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(group: click.Group, ctx: click.Context, name: str, limit: int) -> str:
    lazy = name in COMMANDS
    command = click.Command(name, help=COMMANDS[name][1]) if lazy else group.get_command(ctx, name)
    return command.get_short_help_str(limit) if command is not None else ""


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="auth0-events")
def main() -> None:
    """Operate auth0-events: Auth0 log stream events as Celery tasks on RabbitMQ."""


@main.group()
def db() -> None:
    """The event archive and ledger database (DATABASE_URL)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Migrate up (or down) to this revision.")
def upgrade(revision: str) -> None:
    """Apply the database migrations; safe to run at every start (the Procfile's release process)."""
    from kernel.settings import ConfigurationError, get_settings
    from kernel.storage.db import migrate
    from kernel.storage.explain import safe_url

    try:
        url = get_settings().database_url
        reached = migrate(url, revision)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"migrating {safe_url(url)} failed: {exc}") from exc
    at = ", ".join(reached.current) or "base (no schema)"
    click.echo(f"database {safe_url(url)} is at revision {at}{' (head)' if reached.at_head else ''}")
