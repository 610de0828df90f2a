"""The Flask application factory: ``gunicorn 'service.app:create_app()'``.

:func:`create_app` reads :class:`~service.settings.Settings` once (or takes them, in tests), registers the JSON API
blueprint (:mod:`service.api`) and the JSON error handlers, and hangs a :class:`ServiceContext` off the app. The
stores and the queue are opened lazily, on first use in each process (after gunicorn forks its workers, so no
database connection is shared across processes); nothing heavy happens at start-up.

Every error under ``/api/`` is JSON -- Flask's own ones included (404 for unknown routes, 405, and the 413 werkzeug
raises when a request is over ``MAX_CONTENT_LENGTH``): ``{"error": {"status": ..., "message": ..., "fields": [...]}}``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from service.errors import ServiceError
from service.jobs import JobService
from service.settings import Settings

__all__ = ["ServiceContext", "create_app", "service_context"]

logger = logging.getLogger(__name__)

_EXTENSION = "condense"


class ServiceContext:
    """The service's resources for one process: settings, metadata and blob stores, queue, job service (lazy)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._jobs: JobService | None = None

    @property
    def jobs(self) -> JobService:
        if self._jobs is None:
            with self._lock:
                if self._jobs is None:
                    from service.queue import open_queue
                    from storage import open_blob_store, open_metadata_store

                    metadata = open_metadata_store(self.settings.database_url)
                    blobs = open_blob_store(self.settings.blob_url)
                    queue = open_queue(self.settings.broker_url)
                    self._jobs = JobService(self.settings, metadata, blobs, queue)
        return self._jobs

    def close(self) -> None:
        """Close the stores (tests; a process exiting needs no call)."""
        if self._jobs is not None:
            self._jobs.queue.close()
            self._jobs.metadata.close()
            self._jobs.blobs.close()
            self._jobs = None


def service_context(app: Flask | None = None) -> ServiceContext:
    """The :class:`ServiceContext` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    return target.extensions[_EXTENSION]


def _error_response(status: int, message: str, fields: list[dict[str, str]] | None = None) -> Any:
    response = jsonify({"error": {"status": status, "message": message, "fields": fields or []}})
    response.status_code = status
    return response


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; ``settings`` default to :meth:`Settings.from_env`."""
    from service.api import api
    from service.web import web

    if settings is None:
        settings = Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = 1024 * 1024  # the non-file form fields (the options JSON)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[_EXTENSION] = ServiceContext(settings)
    app.register_blueprint(api)
    app.register_blueprint(web)

    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> Any:
        response = _error_response(error.status, error.message, error.fields)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="condense"'
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Any:
        limit = settings.max_request_bytes
        return _error_response(413, f"the request is over the {limit:,}-byte limit")

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return error
        return _error_response(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        if not request.path.startswith("/api/"):
            return _error_response(500, "internal server error")
        return _error_response(500, f"internal server error ({type(error).__name__})")

    return app
