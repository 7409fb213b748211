"""POST /webhooks/auth0: the endpoint an Auth0 Custom Webhook log stream points at."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, jsonify, request

from app.receiver import Receiver
from tasks.logging_setup import log_context

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/auth0")
def receive_log_batch() -> tuple[Response, int]:
    """Accept a batch of Auth0 log records.

    202 with the counts once RabbitMQ confirmed every message; 401 wrong token; 400 unparsable body
    (says where); 413 too large; 503 with Retry-After when the broker did not confirm.
    """
    receiver: Receiver = current_app.extensions["auth0_events"]
    receiver.authenticate(request.headers.get("Authorization"))
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    with log_context(request_id=request_id):
        intake = receiver.receive(request.get_data(cache=False), request_id)
    response = jsonify(intake.summary())
    response.headers["X-Request-Id"] = request_id
    return response, 202
