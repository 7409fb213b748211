"""``auth0-events dlq``: inspect, replay and purge the dead-letter queues."""

from __future__ import annotations

import click


@click.group()
def dlq() -> None:
    """Inspect, replay and purge the dead-letter queues (<queue>.dlq)."""
