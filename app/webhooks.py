"""POST /webhooks/auth0: the endpoint an Auth0 Custom Webhook log stream points at."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.receiver import Receiver
from kernel.logging_setup import log_context

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/auth0")
def receive_log_batch() -> tuple[Response, int]:
    """Accept a batch of Auth0 log records.

    202 with the counts once RabbitMQ confirmed every message; 401 wrong token; 400 unparsable body
    (says where); 413 too large, however the body is framed; 503 with Retry-After when the broker did
    not confirm.
    """
    receiver: Receiver = current_app.extensions["auth0_events"]
    receiver.authenticate(request.headers.get("Authorization"))
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    with log_context(request_id=request_id):
        intake = receiver.receive(read_body(), request_id)
    response = jsonify(intake.summary())
    response.headers["X-Request-Id"] = request_id
    return response, 202


def read_body() -> bytes:
    """The request's body, whole; 413 when it is over MAX_CONTENT_LENGTH, whether it came with a
    Content-Length or chunked.

    Werkzeug refuses a Content-Length over the limit, but reads a chunked body only up to the limit and
    returns those bytes as if the body ended there (its LimitedStream stops at the limit without asking
    for more). So a body that reaches the limit is checked for one byte more on the server's own input,
    which ends where the chunked body ends (the server sets ``wsgi.input_terminated``; gunicorn does).
    """
    limit = request.max_content_length
    chunked = request.content_length is None
    body = request.get_data(cache=False)
    if chunked and limit is not None and len(body) >= limit and request.input_stream.read(1):
        raise RequestEntityTooLarge(f"the body is over AUTH0_EVENTS_MAX_BODY_BYTES ({limit} bytes)")
    return body
