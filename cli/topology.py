"""``auth0-events topology``: declare and inspect the broker's exchanges and queues."""

from __future__ import annotations

import click


@click.group()
def topology() -> None:
    """Declare and inspect exchanges, queues and DLQs."""
