"""``auth0-events send``: POST realistic sample Auth0 log records to a receiver."""

from __future__ import annotations

import click


@click.command()
def send() -> None:
    """Generate realistic Auth0 log records and POST them to a URL."""
