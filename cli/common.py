"""What every command shares: settings that fail cleanly, a broker connection that says why it failed."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from kombu.connection import Connection

from kernel.broker_url import hide_passwords, retries_over_nodes
from kernel.settings import ConfigurationError, Settings, get_settings

# Exit codes scripts can rely on (click itself exits 2 for bad usage).
EXIT_FAILURE = 1
EXIT_UNAVAILABLE = 3  # the broker, the database or Auth0 could not be reached


class Unavailable(click.ClickException):
    """Raised when a service the command needs (broker, database, Auth0) cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


def settings_or_exit() -> Settings:
    """The settings, or a clean error naming the variable that is wrong."""
    try:
        return get_settings()
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def safe_broker_url(url: str) -> str:
    """A broker URL with every node's password hidden (kombu's way: ``amqp://guest:**@host//``), for
    messages."""
    return hide_passwords(url)


def connect_broker(settings: Settings, timeout: float = 10.0) -> Connection:
    """An open connection to BROKER_URL (publisher confirms waited for per message).

    Raises Unavailable naming the broker when it cannot be reached.
    """
    connection = Connection(
        settings.broker_url, connect_timeout=timeout, transport_options={"confirm_publish": True}
    )
    try:
        connection.ensure_connection(
            max_retries=retries_over_nodes(connection, 2),
            interval_start=0.5,
            interval_step=0,
            interval_max=0.5,
        )
    except Exception as exc:  # noqa: BLE001 - kombu raises several kinds; all mean the same here
        connection.release()
        raise Unavailable(
            f"cannot reach the broker at {safe_broker_url(settings.broker_url)}: {exc}"
        ) from exc
    return connection


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout."""
    click.echo(json.dumps(value, indent=2, default=str))


def interactive() -> bool:
    """Whether progress lines should be drawn (stderr is a terminal)."""
    return sys.stderr.isatty()
