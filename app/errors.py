"""HTTP errors the receiver answers with, each rendered as a JSON body."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """Base of the errors a view raises to answer with ``status_code`` and a JSON ``error`` body."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body: ``{"error": code, "message": …, **details}``."""
        return {"error": self.code, "message": self.message, **self.details}


class Unauthorized(ApiError):
    """Raised when the Authorization header carries no configured log stream token."""

    status_code = 401
    code = "unauthorized"


class UnparsableBody(ApiError):
    """Raised when the body is not JSON Lines, a JSON array or a JSON object; says where it failed."""

    status_code = 400
    code = "unparsable_body"


class BrokerUnavailable(ApiError):
    """Raised when RabbitMQ did not confirm every message of the request, so Auth0 must send it again."""

    status_code = 503
    code = "broker_unavailable"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def register_error_handlers(app: Flask) -> None:
    """Render ApiError and every HTTP error (413, 404, 405, …) as JSON, never as an HTML page."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int]:
        response = jsonify(error.to_dict())
        if isinstance(error, BrokerUnavailable):
            response.headers["Retry-After"] = str(error.retry_after)
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = 'Bearer realm="auth0-events"'
        return response, error.status_code

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        status = error.code or 500
        return jsonify({"error": code, "message": error.description}), status
