"""The Flask application factory: ``gunicorn 'service.app:create_app()'``.

:func:`create_app` reads :class:`~service.settings.Settings` once (or takes them, in tests), hangs a
:class:`~service.context.ServiceContext` off the app, registers the JSON API (:mod:`service.api`), the pages
(:mod:`service.web`) and the JSON error handlers. Nothing heavy happens at start-up: the stores and the queue open
on first use in each process.

Every error under ``/api/`` is JSON -- Flask's own ones included (404 for unknown routes, 405, and the 413 werkzeug
raises when a request is over ``MAX_CONTENT_LENGTH``): ``{"error": {"status": ..., "message": ..., "fields": [...]}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service.api import api
from service.api.request_body import CondenseRequest
from service.context import EXTENSION, ServiceContext, service_context
from service.errors import ServiceError, error_body
from service.settings import Settings
from service.web import web

__all__ = ["ServiceContext", "create_app", "service_context"]

logger = logging.getLogger(__name__)


def _error_response(status: int, message: str, fields: list[dict[str, str]] | None = None) -> Any:
    response = jsonify(error_body(status, message, fields))
    response.status_code = status
    return response


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; ``settings`` default to :meth:`Settings.from_env`."""
    if settings is None:
        settings = Settings.from_env()
    app = Flask(__name__)
    app.request_class = CondenseRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024  # the non-file form fields (the options JSON)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = ServiceContext(settings)
    app.register_blueprint(api)
    app.register_blueprint(web)

    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> Any:
        response = _error_response(error.status, error.message, error.fields)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="condense"'
        if error.retry_after_s is not None:
            response.headers["Retry-After"] = str(error.retry_after_s)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Any:
        limit = settings.max_request_bytes
        if (request.content_length or 0) <= limit:  # werkzeug's limit on one form field (not a file) in memory
            field_limit = app.config["MAX_FORM_MEMORY_SIZE"]
            return _error_response(
                413,
                f"a form field is over the {field_limit:,}-byte limit of fields that are not files",
                [{"field": "options", "reason": f"over the {field_limit:,}-byte limit"}],
            )
        return _error_response(413, f"the request is over the {limit:,}-byte limit")

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return error
        response = _error_response(error.code or 500, error.description or error.name)
        for name, value in error.get_headers():
            if name.lower() in ("allow", "retry-after"):  # 405's list of methods (RFC 9110), 429/503's wait
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        if not request.path.startswith("/api/"):
            return _error_response(500, "internal server error")
        return _error_response(500, f"internal server error ({type(error).__name__})")

    return app
