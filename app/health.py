"""GET /healthz (the process is up) and GET /readyz (the broker answers)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from app.publisher import PublishError
from app.receiver import Receiver

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 while the process serves requests, whatever the broker's state."""
    return jsonify({"status": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the broker connection is up (connecting if needed), else 503 saying why."""
    receiver: Receiver = current_app.extensions["auth0_events"]
    try:
        receiver.publisher.check()
    except PublishError as exc:
        return jsonify({"status": "unavailable", "broker": str(exc)}), 503
    return jsonify({"status": "ready", "broker": "ok"}), 200
