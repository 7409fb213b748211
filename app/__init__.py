"""The receiver: a Flask app that turns Auth0 log stream batches into confirmed Celery task messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from app import events_api, health, metrics, webhooks
from app.errors import register_error_handlers
from app.publisher import EventPublisher
from app.receiver import Receiver
from kernel.celery_app import app as celery_app
from kernel.routing import RouteSpecError, parse_routes
from kernel.settings import ConfigurationError, Settings, get_settings


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create the receiver; ``test_config`` may carry a ``SETTINGS`` object and Flask options.

    Raises ConfigurationError naming the variable when the configuration cannot serve requests.
    """
    app = Flask(__name__)
    app.config.update(test_config or {})
    settings: Settings = app.config.get("SETTINGS") or get_settings()
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    receiver = _build_receiver(settings)
    app.extensions["auth0_events"] = receiver
    metrics.init_app(app, settings.broker_url, receiver.routes.queues, settings.queue_type)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(events_api.bp)
    register_error_handlers(app)
    return app


def _build_receiver(settings: Settings) -> Receiver:
    if not settings.log_stream_tokens and not settings.allow_unauthenticated:
        raise ConfigurationError(
            "AUTH0_LOG_STREAM_TOKENS is not set: set it to the token typed into the Auth0 stream's "
            "Authorization field (or AUTH0_EVENTS_ALLOW_UNAUTHENTICATED=true for local development only)"
        )
    try:
        routes = parse_routes(settings.routes)
    except RouteSpecError as exc:
        raise ConfigurationError(f"AUTH0_EVENTS_ROUTES: {exc}") from exc
    publisher = EventPublisher(
        celery_app, settings.broker_url, routes.queues, settings.publish_timeout, settings.queue_type
    )
    return Receiver(settings=settings, routes=routes, publisher=publisher)
