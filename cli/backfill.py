"""``auth0-events backfill``: bring in missed events from the Auth0 Management API."""

from __future__ import annotations

import click


@click.command()
def backfill() -> None:
    """Pull missed logs from the Management API and process them like the stream's."""
