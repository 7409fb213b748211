"""What `backfill` and `stream` build from the settings: credentials, routes, the confirmed publisher."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
import httpx

from cli.common import Unavailable, safe_broker_url
from cli.management.api import HTTP_TIMEOUT_SECONDS, Credentials, normalize_domain
from cli.management.fill import Publisher
from kernel.routing import RouteSpecError, RouteTable, parse_routes
from kernel.settings import Settings


def credentials(settings: Settings, needs: str) -> Credentials:
    """The tenant's machine-to-machine application; a ClickException naming what is not set.

    ``needs``: the scopes the command needs, for the message ("read:logs").
    """
    missing = missing_credentials(settings)
    if missing:
        raise click.ClickException(
            f"{', '.join(missing)} not set: this command needs a machine-to-machine application with {needs}"
        )
    domain = normalize_domain(settings.auth0_domain)
    return Credentials(domain, settings.auth0_client_id.strip(), settings.auth0_client_secret)


def missing_credentials(settings: Settings) -> list[str]:
    """The names of the machine-to-machine application's variables that are not set."""
    named = {
        "AUTH0_DOMAIN": settings.auth0_domain,
        "AUTH0_CLIENT_ID": settings.auth0_client_id,
        "AUTH0_CLIENT_SECRET": settings.auth0_client_secret,
    }
    return [name for name, value in named.items() if not value.strip()]


def routes(settings: Settings) -> RouteTable:
    """AUTH0_EVENTS_ROUTES parsed; a ClickException saying what is wrong with it."""
    try:
        return parse_routes(settings.routes)
    except RouteSpecError as exc:
        raise click.ClickException(f"AUTH0_EVENTS_ROUTES: {exc}") from exc


@contextmanager
def confirmed_publisher(settings: Settings, table: RouteTable) -> Iterator[Publisher]:
    """The receiver's confirmed publisher, checked first so a dead broker costs no Auth0 requests."""
    from app.publisher import EventPublisher, PublishError
    from kernel.celery_app import app as celery_app

    publisher = EventPublisher(
        celery_app, settings.broker_url, table.queues, settings.publish_timeout, settings.queue_type
    )
    try:
        try:
            publisher.check()
        except PublishError as exc:
            raise Unavailable(
                f"cannot reach the broker at {safe_broker_url(settings.broker_url)}: {exc}"
            ) from exc
        yield publisher
    finally:
        publisher.close()


def http_client(user_agent: str) -> httpx.Client:
    """The client every Management API request goes through: no redirects followed, SSL_CERT_FILE trusted."""
    return httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, headers={"User-Agent": user_agent})
